import json

from django.http import HttpResponse, JsonResponse
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse("Hello from Django", content_type="text/plain")


def link(request):
    # reverse() prefixes SCRIPT_NAME: shows that Django sees the mount.
    return HttpResponse(reverse("hello"), content_type="text/plain")


@csrf_exempt
def echo(request):
    data = json.loads(request.body)
    return JsonResponse({"data": data, "length": len(request.body),
                         "path": request.path, "path_info": request.path_info})


urlpatterns = [
    path("hello", hello, name="hello"),
    path("link", link),
    path("echo", echo),
]
