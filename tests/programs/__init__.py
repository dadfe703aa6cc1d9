"""C programs that minikvm's tests run natively and under minikvm.

Build them with :mod:`tests.programs.build` (``program("hello", "musl-static")``).
"""
