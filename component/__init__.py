"""xmpp-mft: managed file transfer for XMPP (XEP-0363 component, SFTP repository, AFT_LOG)."""

__version__ = "0.1.0"
