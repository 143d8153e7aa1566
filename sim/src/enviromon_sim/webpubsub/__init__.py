"""A local Web PubSub that the real azure-messaging-webpubsubservice SDK talks to."""
