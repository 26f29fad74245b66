"""The fine-zoo HTTP API (FastAPI). Never imports torch: it stays small and starts fast."""
