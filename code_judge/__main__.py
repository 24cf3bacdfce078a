from code_judge.cli import main

main()
