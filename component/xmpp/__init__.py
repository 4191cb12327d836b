"""The XMPP side: the XEP-0114 component, its stanzas, slot policy and chat types."""
