"""`artstore ui`: a local, read-only web app over a store (runs, charts, rollouts, checkpoints,
versions, SQL). Needs the `ui` extra: pip install 'artstore[ui]'.

    from artstore.ui.server import create_app, serve
"""
