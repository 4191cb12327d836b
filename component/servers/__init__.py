"""XMPP servers and child processes launched for the sandbox and the tests, and the
snippets that attach the component to a server."""
