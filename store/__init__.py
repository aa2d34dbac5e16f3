"""Durable rooms: SQLite storage of rooms, their attributes and histories."""
