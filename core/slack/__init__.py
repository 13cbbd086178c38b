"""What aico shows in Slack, beside the Slack adapter: Block Kit (`blocks`), the patience policy
for Slack's "not now" errors (`patience`), and Slack's errors as users read them (`errors`).
Plain Python: no Slack client here."""
