"""The HTTP doors: Rekognition's JSON 1.1 protocol (``aws``) and the native REST API (``rest``),
served by one FastAPI app (``app.create_app``). Both translate requests into
``RegardService.call`` and errors into their wire formats; no face logic lives here."""
