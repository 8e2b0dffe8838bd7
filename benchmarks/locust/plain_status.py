"""The baseline: a plain FastHttpUser reading the campaign status as fast as it can."""

from locust import FastHttpUser, constant, task


class PlainStatusUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def status(self) -> None:
        self.client.get("/v1/campaign/status?user_id=u00001", name="GET /v1/campaign/status", headers={"X-Device-Id": "device-plain"})
