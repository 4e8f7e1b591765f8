"""Automations: rules that act on record events and on time, and holds that make work wait.

A rule belongs to one object type: a trigger, a CEL condition and ordered actions. When a rule
is saved, ``graph`` builds, for its object type and the types its actions reach, which rule's
writes can fire which rule, and refuses cycles and unordered races. At run time ``engine``
follows a cascade of firings with a depth limit and runs each rule at most once per record per
originating event. Time-relative triggers are ``RuleTimer`` rows fired by the sweep.

Domain apps say which of their object types rules may run on, and which services create and
update those records (``subjects.register``).
"""
