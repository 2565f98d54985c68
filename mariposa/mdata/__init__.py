"""Live metadata: the manifest's ``mdata``, files inside running instances that follow the meta."""
