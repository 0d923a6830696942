pytest_plugins = ["netchat.testing"]
