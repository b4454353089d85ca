"""aidx.service: the web app, routes, auth and CLI; composes everything below it."""
