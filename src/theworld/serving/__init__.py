"""Using a trained model: the generation engine, the OpenAI-compatible server and its web page."""
