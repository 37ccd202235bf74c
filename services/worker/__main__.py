"""`python -m services.worker`: run one worker process."""
from services.worker.main import main

main()
