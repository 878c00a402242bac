"""The run on disk: its layout (`layout`: every file name in a run directory), its directory and run.json record
(`directory`), the checkpoint callbacks (`checkpoints`) and resume checks (`resume`), the loggers writing into it
(`loggers`), and the processes of one run (`ranks`)."""
