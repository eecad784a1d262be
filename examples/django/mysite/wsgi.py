"""WSGI entry point of the example project.

    pip install django
    wsgi-fpm --http 127.0.0.1:8000 --python-path examples/django mysite.wsgi:application
    curl http://127.0.0.1:8000/hello/world/

Behind nginx over uwsgi, mounted at /blog (see conf/nginx/uwsgi.conf):

    wsgi-fpm --uwsgi 127.0.0.1:3031 --mount /blog \
             --python-path examples/django mysite.wsgi:application
"""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
