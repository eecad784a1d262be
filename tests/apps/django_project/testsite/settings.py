"""Minimal Django settings for the end-to-end tests: no database, no apps."""
SECRET_KEY = "wsgi-fpm-tests-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "testsite.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {}
USE_TZ = True
APPEND_SLASH = False
