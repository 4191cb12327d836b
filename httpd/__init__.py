"""The HTTP side of xmpp-mft: streams uploads into the repository and downloads out of it."""
