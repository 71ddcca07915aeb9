"""twin_server.models"""
