"""The router wrapped in wsgiref.validate.validator: any PEP 3333 violation
by the *server* (wrong environ types, missing keys, a bad wsgi.input) raises
an AssertionError inside the application, which the test sees as a 500."""
from wsgiref.validate import validator

from router import application as _inner

application = validator(_inner)
