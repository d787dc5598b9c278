-- wrk script: POST the same body on every request.
-- WRK_BODY is the body, WRK_CTYPE its Content-Type, WRK_KEY an API key for x-api-key.
wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = os.getenv("WRK_CTYPE")
wrk.headers["x-api-key"] = os.getenv("WRK_KEY")
