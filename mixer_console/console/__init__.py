"""The operator console: a Textual dashboard over a relay's ``RelayControl``."""
