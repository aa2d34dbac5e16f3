"""Widgets of the dashboard, each fed by the relay's snapshots."""
