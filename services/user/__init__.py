"""The user service: accounts, sessions (signed tokens) and public profiles."""
