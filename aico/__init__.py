"""The composition root: the `aico` command, the operator commands, `aico dev` and what it runs
(the Procfile runner, a private RabbitMQ node, the local fakes of Slack and Claude). It imports
bot, workers and core; nothing imports it."""
