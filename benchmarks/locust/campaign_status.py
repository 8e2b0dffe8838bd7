"""CampaignUser with every step a status read and no pacing: its client machinery at full speed."""

from locust import constant

from paychaos.load.locustfile import CampaignUser


class CampaignStatusUser(CampaignUser):
    wait_time = constant(0)
    cycle = ("status",)

    def on_start(self) -> None:
        super().on_start()
        self.user_id = "u00001"
