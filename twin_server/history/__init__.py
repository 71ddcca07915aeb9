"""twin_server.history"""
