"""The caseline broker: a pure core, a storage interface, and a thin aiohttp edge."""
