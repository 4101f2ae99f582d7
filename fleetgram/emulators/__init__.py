"""Local emulators of the Telegram Bot API and the Anthropic Messages API, served over HTTP.

They are as strict and as unreliable as the real services (documented limits, 429 storms, 5xx
bursts, lost replies), so the tests, the benchmarks and `fleetgram demo` run the real fleet
against them without any token.
"""
