"""Pictures of recorded graphs: op view, path view, step view; plots; JSON export."""
