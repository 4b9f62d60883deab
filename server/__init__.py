"""The HTTP service: `magnet serve` (cli.py) runs `create_app` (app.py) under uvicorn."""
