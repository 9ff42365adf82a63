"""The user-facing side of srgan-service: the HTTP gateway and the ``srgan`` command line."""
