"""Campaign-shaped traffic: load shapes, the Locust users, and the runner that keeps Locust in a child process."""
