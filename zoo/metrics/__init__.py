"""The metric suite. ``zoo.metrics.functional`` holds the functional forms."""
