"""Every channel makes the same case."""


def handle_mail(inbound, parsed):
    raise NotImplementedError


def handle_reply(record, inbound, parsed):
    raise NotImplementedError
