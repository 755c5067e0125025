from restore.cli import main

main()
