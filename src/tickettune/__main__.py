from tickettune.cli import entry

entry()
