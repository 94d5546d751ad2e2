"""The meeting report and its charts."""
