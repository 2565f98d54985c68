"""Scheduled and event services: when they fire (``schedule``), what becomes of each firing or
request (``policy``, pure) and the daemon task that carries it out (``scheduler``). Their runs
are stored by ``mariposa.store.runs``; the control layer's face is ``mariposa.control.runs``."""
