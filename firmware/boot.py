# Runs on every boot, also on mpremote's soft reset (which skips main.py). Kept tiny on purpose:
# nothing here can fail, so a broken app never locks the REPL out.
import gc

gc.collect()
