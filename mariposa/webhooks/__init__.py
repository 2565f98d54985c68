"""Outgoing webhooks (the spec's ``webhooks``): events of the log POSTed as JSON to the URLs a
service (or the whole project) lists, signed, at least once, each URL a queue of its own.

``events`` maps the log's types to webhook events and makes the bytes sent; ``dispatcher``
follows the log and writes deliveries (store/webhooks.py); ``sender`` sends one URL's.
"""

from mariposa.webhooks.dispatcher import Dispatcher as Dispatcher
from mariposa.webhooks.events import signature as signature
from mariposa.webhooks.events import webhook_event as webhook_event
