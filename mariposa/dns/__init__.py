"""Service names for every runtime: the local equivalent of the spec's CNS. ``zone`` says which
names a project has and which addresses they have now; ``responder`` answers them on each project
bridge's gateway and forwards the rest to the host's resolvers."""
