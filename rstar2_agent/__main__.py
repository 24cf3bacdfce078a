from rstar2_agent.cli import main

main()
