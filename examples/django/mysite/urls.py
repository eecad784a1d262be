from django.http import HttpResponse, JsonResponse
from django.urls import path, reverse


def index(request):
    return JsonResponse({"hello": reverse("hello", args=["world"])})


def hello(request, name):
    return HttpResponse(f"Hello, {name}!\n", content_type="text/plain")


urlpatterns = [
    path("", index),
    path("hello/<str:name>/", hello, name="hello"),
]
