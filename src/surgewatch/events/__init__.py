"""Input events: parsing, validation and normalisation of post and signup events."""
