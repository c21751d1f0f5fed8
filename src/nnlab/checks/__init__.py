"""What a config may say: start-up checks of a composed config against the constructors it names,
and the one gate for configs that come from elsewhere (`untrusted`)."""
