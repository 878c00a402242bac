"""The run on disk: its directory and record (`directory`), and the processes of one run (`ranks`)."""
