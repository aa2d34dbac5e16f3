"""A wire-compatible relay (broadcaster) for the Mixer collaborative Blender add-on."""
