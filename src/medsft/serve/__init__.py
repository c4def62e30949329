"""Using a trained model: merge, chat, batch generation, the OpenAI-compatible server."""
