"""A local Web PubSub that the real azure-messaging-webpubsubservice SDK talks to.

See docs/local-pubsub.md. `WebPubSubServer` runs in an event loop, `WebPubSubThread` in a
background thread; ``enviromon pubsub serve`` runs one from the command line.
"""

from enviromon_sim.webpubsub.server import WebPubSubServer, WebPubSubThread, generate_access_key

__all__ = ["WebPubSubServer", "WebPubSubThread", "generate_access_key"]
