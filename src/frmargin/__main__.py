from frmargin.cli import main

main()
