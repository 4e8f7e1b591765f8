"""Status sequences: pipelines of stages that people move records through by judgement.

The engine is generic: a domain app registers which of its object types run in pipelines and
which of their fields hold the stage, the amount, the close date and the probability
(``subjects.register``). Every move is a ``StageChange`` row; time in stage, backward moves and
value drops are read from those rows.
"""
